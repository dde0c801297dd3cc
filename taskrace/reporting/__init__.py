"""Reporting: one record model rendered as the terminal's tables (report, columns,
tables), markdown, CSV, the HTML page and its charts (html_report, plots), the diff of
two files (diff); the documents themselves: results' schema, one atomic scrubbed writer
(documents) and one loader per schema (schemas)."""
