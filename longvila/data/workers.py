"""The two helper threads of the pack stage, so that Python work overlaps tokenization.

    reader thread            main thread                  packer thread
    read a file, parse JSON, drop over-budget docs,       shuffle buffer, pack rows,
    drop short docs    --->  batch-encode (Rust, GIL  --> write Parquet row groups
                             released, all cores)

The Rust tokenizer releases the GIL, so the reader parses the next batch and the packer packs the last one
while a batch is encoded. Each queue has one producer and one consumer and keeps order, so the output does
not depend on timing: it stays deterministic. Queues are bounded (memory stays bounded). An error on a
helper thread stops it and is re-raised on the main thread at its next hand-over; an error on the main
thread stops both helpers (`close`), which notice within 0.1 s.
"""

from __future__ import annotations

import queue
import threading

from longvila.data.packing import Packer, Sampler, ShuffleBuffer
from longvila.data.parquet import ShardWriter
from longvila.data.slimpajama import InputFile, SkipLog, read_documents

_DONE = object()
_POLL_S = 0.1


class _Stage(threading.Thread):
    def __init__(self, name: str) -> None:
        super().__init__(daemon=True, name=name)
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def fail(self, error: BaseException) -> None:
        """Record this thread's error and stop; the main thread re-raises it."""
        self.error = error
        self.stop.set()

    def put(self, item) -> bool:
        """Put into this stage's queue; False once the stage is stopped (the item is dropped)."""
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def get(self):
        """Take from this stage's queue; `_DONE` once the stage is stopped."""
        while not self.stop.is_set():
            try:
                return self.queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        return _DONE

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.stop.set()
        self.join()


class ReaderStage(_Stage):
    """Reads the files in `order`, counting bad records in `skips`; yields batches of length-sampled docs."""

    def __init__(self, inputs, order, sampler: Sampler, skips: SkipLog, batch_size: int) -> None:
        super().__init__("pack-reader")
        self.inputs, self.order, self.sampler, self.skips, self.batch_size = inputs, order, sampler, skips, batch_size
        self.files: list[InputFile] = []
        self.dropped_short = 0

    def run(self) -> None:
        try:
            batch = []
            for i in self.order:
                path, name = self.inputs[i]
                info = InputFile(name=name)
                for doc in read_documents(path, name, self.skips, info):
                    if self.stop.is_set():
                        return
                    if self.sampler.drops_short(doc.doc_id, len(doc.text)):
                        self.dropped_short += 1
                        continue
                    batch.append(doc)
                    if len(batch) >= self.batch_size:
                        if not self.put(batch):
                            return
                        batch = []
                self.files.append(info)
            self.put(batch)
            self.put(_DONE)
        except BaseException as e:
            self.fail(e)

    def batches(self):
        """The batches of documents, in order; re-raises the reader's error."""
        while (item := self.get()) is not _DONE:
            yield item
        self.raise_error()


class PackerStage(_Stage):
    """Shuffles accepted documents through the buffer, packs rows and writes them; `finish` drains it."""

    def __init__(self, shuffle: ShuffleBuffer, packer: Packer, writer: ShardWriter) -> None:
        super().__init__("pack-writer")
        self.shuffle, self.packer, self.writer = shuffle, packer, writer

    def put(self, item) -> bool:
        """Hand a batch over; re-raises the packer's error if it has failed."""
        ok = super().put(item)
        self.raise_error()
        return ok

    def run(self) -> None:
        try:
            while (docs := self.get()) is not _DONE:
                for doc in docs:
                    item = self.shuffle.push(doc)
                    if item is not None:
                        self.writer.add(self.packer.add_document(*item))
            if self.stop.is_set():  # stopped from outside: nothing more to write
                return
            for item in self.shuffle.drain():
                self.writer.add(self.packer.add_document(*item))
        except BaseException as e:
            self.fail(e)

    def finish(self) -> None:
        """Wait until everything put so far is packed and written; re-raise a packing error."""
        self.put(_DONE)
        self.join()
        self.raise_error()
