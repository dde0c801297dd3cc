"""The lab's control: the compose stack's workers (cluster) and workers joining it from
other hosts (join)."""
