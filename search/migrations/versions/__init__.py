"""Schema revisions, oldest first: 0001 (first release), 0002 (jobs), 0003 (keyword
index, extra item texts, EXIF lens/description/keywords), ..."""
