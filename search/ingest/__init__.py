"""Incremental indexing of library folders: the engine behind ``clipsearch index``, the
web service's indexing jobs, the Ray driver and the Python API's ``Library.index``.

:class:`.job.IndexJob` runs the phases; each lives in its own module: :mod:`.discover`
(walking roots), :mod:`.changes` (unchanged, moved, removed), :mod:`.decode` and
:mod:`.workers` (decoding in crash-tolerant worker processes), :mod:`.balance` (how
many decoder processes, measured per job), :mod:`.embed`
(decode -> encode streams), :mod:`.commit` (checkpoints), :mod:`.captions` (sidecar
texts), :mod:`.summary` (progress and the report).

This file imports nothing: decoder processes import :mod:`.decode` and should not pay
for the store, the indexes and the encoder that the job brings.
"""
