"""Schema revisions, oldest first: 0001 (first release), 0002 (jobs), ..."""
