"""Reporting: one record model rendered as the terminal's tables (report, columns,
tables), markdown, CSV, the HTML page and its charts (html_report, plots), the diff of
two files (diff); the documents themselves: results' schema and one atomic scrubbed
writer (documents). Reading any command's document back is taskrace.schemas'."""
