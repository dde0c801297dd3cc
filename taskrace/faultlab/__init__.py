"""The fault lab: inject a fault while work runs, and count what it did to the work."""
