"""Safe decoding of media files, shared by indexing and by query uploads."""
