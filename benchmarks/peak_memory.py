# Copyright 2026 The xgen-mm authors. Licensed under the Apache License, Version 2.0.
"""Peak memory measurements shared by the benchmarks (a helper module, not a command).

- `peak_rss_in_fresh_process`: runs Python statements in a fresh interpreter and returns its resident memory after
  their set-up part, imports included (the baseline), and the kernel's high-water mark of its memory (VmHWM, the
  peak). Used to measure
  converting and loading, where the peak of one whole process is the question.
- `PeakMemory`: the peak increase of this process's memory during a `with` block: the CUDA allocator's peak on a GPU;
  on a CPU, the anonymous resident memory (`/proc/self/statm` resident - shared) sampled in a thread, because
  `ru_maxrss` and VmHWM only ever rise and would hide a block's own peak behind an earlier one.
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch


# Runs in the measured process: RSS after the set-up is the baseline, the kernel's high-water mark of this process's
# memory (VmHWM) the peak. Not `ru_maxrss`: Linux carries the parent's peak into it across fork and exec. The body
# sets `result`, a dict of JSON values reported with the two.
CHILD = """
import json, sys
from pathlib import Path
{setup}

def status_bytes(field):
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1]) * 1024

baseline = status_bytes("VmRSS:")
{body}
print(json.dumps({{**result, "baseline": baseline, "peak": status_bytes("VmHWM:")}}))
"""
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def peak_rss_in_fresh_process(setup: str, body: str, args: list[str]) -> dict:
    """Runs `setup`, then `body` in a fresh Python process; both read `sys.argv[1:]` = `args`, and `body` sets a dict
    `result`. Returns `result` with `baseline` (RSS after `setup`) and `peak` (VmHWM), both in bytes."""
    child = CHILD.format(setup=setup, body=body)
    completed = subprocess.run([sys.executable, "-c", child, *args], capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"the measured process failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def anonymous_rss_bytes() -> int:
    """This process's resident memory that no file backs (heap, tensors), from `/proc/self/statm`."""
    resident, shared = map(int, Path("/proc/self/statm").read_text().split()[1:3])
    return (resident - shared) * PAGE_BYTES


class PeakMemory:
    """`with PeakMemory(device) as memory: ...`, then `memory.peak`: the block's peak memory in bytes (CUDA allocator
    on a GPU, anonymous RSS sampled every `interval` seconds on a CPU), and `memory.increase`: that peak over the
    memory held when the block started."""

    def __init__(self, device: torch.device, interval: float = 0.001):
        self.device = torch.device(device)
        self.interval = interval
        self.peak = self.increase = 0
        self._stop = threading.Event()

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._baseline = torch.cuda.memory_allocated(self.device)
        else:
            self._baseline = self._peak = anonymous_rss_bytes()
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, anonymous_rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc_info) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._sampler.join()
            self.peak = max(self._peak, anonymous_rss_bytes())
        self.increase = self.peak - self._baseline
