"""The two helper threads of the pack stage, so that Python work overlaps tokenization.

    reader thread            main thread                  packer thread
    read .zst, parse JSON,   drop over-budget docs,       shuffle buffer, pack rows,
    drop short docs    --->  batch-encode (Rust, GIL  --> write Parquet row groups
                             released, all cores)

The Rust tokenizer releases the GIL, so the reader parses the next batch and the packer packs the last one
while a batch is encoded. Each queue has one producer and one consumer and keeps order, so the output does
not depend on timing: it stays deterministic. Queues are bounded (memory stays bounded); an error on any
thread stops the others and is re-raised on the main thread.
"""

from __future__ import annotations

import queue
import threading

from longvila.data.packing import Packer, Sampler, ShuffleBuffer
from longvila.data.parquet import ShardWriter
from longvila.data.slimpajama import InputFile, SkipLog, read_documents

_DONE = object()


class _Stage(threading.Thread):
    def __init__(self, name: str) -> None:
        super().__init__(daemon=True, name=name)
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def put(self, item) -> None:
        """Put into this stage's queue, giving up (silently) once the stage is stopped."""
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def get(self):
        """Take from this stage's queue; `_DONE` once the stage is stopped."""
        while not self.stop.is_set():
            try:
                return self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
        return _DONE

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
                    if self.sampler.drops_short(doc.doc_id, len(doc.text)):
                        self.dropped_short += 1
                        continue
                    batch.append(doc)
                    if len(batch) >= self.batch_size:
                        self.put(batch)
                        batch = []
                self.files.append(info)
            self.put(batch)
            self.put(_DONE)
        except BaseException as e:  # handed to the consumer, which re-raises it
            self.put(e)

    def batches(self):
        """The batches of documents, in order; re-raises the reader's error."""
        while (item := self.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item


class PackerStage(_Stage):
    """Shuffles accepted documents through the buffer, packs rows and writes them; `finish` drains it."""

    def __init__(self, shuffle: ShuffleBuffer, packer: Packer, writer: ShardWriter) -> None:
        super().__init__("pack-writer")
        self.shuffle, self.packer, self.writer = shuffle, packer, writer

    def put(self, item) -> None:
        if self.error is not None:
            raise self.error
        super().put(item)

    def run(self) -> None:
        try:
            while (docs := self.get()) is not _DONE:
                for doc in docs:
                    item = self.shuffle.push(doc)
                    if item is not None:
                        self.writer.add(self.packer.add_document(*item))
            if self.stop.is_set():  # stopped by an error elsewhere: nothing more to write
                return
            for item in self.shuffle.drain():
                self.writer.add(self.packer.add_document(*item))
        except BaseException as e:
            self.error = e

    def finish(self) -> None:
        """Wait until everything put so far is packed and written; re-raise a packing error."""
        self.put(_DONE)
        self.join()
        if self.error is not None:
            raise self.error
