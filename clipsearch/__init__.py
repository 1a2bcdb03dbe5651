"""The ``clipsearch`` command line, on top of the library (:mod:`search`), the batch jobs
(:mod:`indexer`) and the web service (:mod:`web`). Its entry point is
:func:`clipsearch.main.main`; programs that embed clipsearch use :mod:`search`."""
