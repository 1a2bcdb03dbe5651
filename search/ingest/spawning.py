"""Decoder processes started like ``spawn``, but without re-running the user's main script.

With the ``spawn`` (and ``forkserver``) start method, every child first imports the
parent's ``__main__`` module by path. A user script that indexes through the Python API
without an ``if __name__ == "__main__":`` guard then runs again in every decoder
process: it opens the library, loads the model and tries to index, once per process.
Decoder processes need none of it: their work is :func:`search.ingest.decode.decode_file`,
importable by name. (``forkserver`` with a preload list does not help: its children still
import ``__main__``; measured on Python 3.11.)

:func:`decoder_context` is a ``spawn`` context whose processes are launched exactly as
CPython's ``popen_spawn_posix`` launches them (its ``_launch``, identical from 3.10 to
3.13), except that the preparation data sent to the child leaves out the main module.
Elsewhere (Windows) it is plain ``spawn``. A module named ``*.__main__`` (``python -m
clipsearch``) was never re-imported by multiprocessing anyway.
"""
from __future__ import annotations

import io
import multiprocessing as mp
import os
from multiprocessing import context as mp_context

MAIN_KEYS = ("init_main_from_path", "init_main_from_name")

try:  # POSIX only
    from multiprocessing import popen_spawn_posix, reduction, spawn, util
except ImportError:  # pragma: no cover - Windows
    popen_spawn_posix = None


if popen_spawn_posix is not None:
    class _NoMainPopen(popen_spawn_posix.Popen):
        """``popen_spawn_posix.Popen`` whose child does not import the parent's main."""

        def _launch(self, process_obj):
            from multiprocessing import resource_tracker

            tracker_fd = resource_tracker.getfd()
            self._fds.append(tracker_fd)
            prep_data = spawn.get_preparation_data(process_obj._name)
            for key in MAIN_KEYS:
                prep_data.pop(key, None)
            fp = io.BytesIO()
            mp_context.set_spawning_popen(self)
            try:
                reduction.dump(prep_data, fp)
                reduction.dump(process_obj, fp)
            finally:
                mp_context.set_spawning_popen(None)
            parent_r = child_w = child_r = parent_w = None
            try:
                parent_r, child_w = os.pipe()
                child_r, parent_w = os.pipe()
                cmd = spawn.get_command_line(tracker_fd=tracker_fd, pipe_handle=child_r)
                self._fds.extend([child_r, child_w])
                self.pid = util.spawnv_passfds(spawn.get_executable(), cmd, self._fds)
                self.sentinel = parent_r
                with open(parent_w, "wb", closefd=False) as f:
                    f.write(fp.getbuffer())
            finally:
                self.finalizer = util.Finalize(
                    self, util.close_fds, [fd for fd in (parent_r, parent_w) if fd is not None])
                for fd in (child_r, child_w):
                    if fd is not None:
                        os.close(fd)

    class _NoMainProcess(mp_context.SpawnProcess):
        _start_method = "spawn"

        @staticmethod
        def _Popen(process_obj):
            return _NoMainPopen(process_obj)

    class _NoMainContext(mp_context.SpawnContext):
        Process = _NoMainProcess

    _CONTEXT = _NoMainContext()
else:  # pragma: no cover - Windows
    _CONTEXT = None


def decoder_context():
    """The multiprocessing context for decoder processes (see the module doc)."""
    return _CONTEXT if _CONTEXT is not None else mp.get_context("spawn")
