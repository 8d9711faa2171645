"""Node utilisation sampling: CPU and memory with psutil, GPUs with NVML.

A background thread samples every ``interval`` seconds. Without a GPU (or
without the NVIDIA driver) there is simply no GPU value: no error, no series.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["IO_KEYS", "NodeSampler"]

# Disk and network bytes since the previous sample (RHAPSODY's field names).
IO_KEYS = ("disk_read_bytes", "disk_write_bytes", "net_sent_bytes", "net_recv_bytes")

logger = logging.getLogger("asyncflow.telemetry")


class _Gpus:
    """NVML access, or nothing when no GPU or driver is present."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[Any] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._nvml = pynvml
        except Exception as exc:  # noqa: BLE001 - no library, driver or device: no GPU series
            logger.debug("no GPU utilisation: %s", exc)

    def utilisation(self) -> list[float]:
        if self._nvml is None:
            return []
        values = []
        for handle in self._handles:
            try:
                values.append(float(self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu))
            except Exception:  # noqa: BLE001
                values.append(0.0)
        return values

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
            self._nvml = None


class NodeSampler:
    """Samples this node every ``interval`` seconds and reports each sample.

    Args:
        interval: seconds between samples.
        report: called with each sample (from the sampler thread).
    """

    def __init__(self, interval: float, report: Callable[[dict[str, Any]], None]) -> None:
        import psutil

        self._psutil = psutil
        self.interval = max(0.05, float(interval))
        self._report = report
        self.node = socket.gethostname()
        self.last: dict[str, Any] = {"node": self.node}
        self._stop = threading.Event()
        self._gpus = _Gpus()
        psutil.cpu_percent(interval=None)  # prime: the first call has nothing to compare with
        self._io = self._io_counters()
        self.sample()
        self._thread = threading.Thread(target=self._run, name="asyncflow-sampler", daemon=True)
        self._thread.start()

    def sample(self) -> dict[str, Any]:
        """Take one sample now."""
        sample: dict[str, Any] = {
            "node": self.node,
            "cpu": float(self._psutil.cpu_percent(interval=None)),
            "memory": float(self._psutil.virtual_memory().percent),
            "gpu": self._gpus.utilisation(),
        }
        io, before = self._io_counters(), self._io
        self._io = io
        for key in IO_KEYS:
            now, then = io.get(key), before.get(key)
            # A counter that went back (a device removed) has no delta.
            ok = now is not None and then is not None and now >= then
            sample[key] = float(now - then) if ok else None  # type: ignore[operator]
        self.last = sample
        return sample

    def _io_counters(self) -> dict[str, int | None]:
        """Disk and network byte counters of the node (None where unknown)."""
        counters: dict[str, int | None] = dict.fromkeys(IO_KEYS)
        with contextlib.suppress(Exception):  # no disks, or no permission
            disk = self._psutil.disk_io_counters()
            if disk is not None:
                counters["disk_read_bytes"] = disk.read_bytes
                counters["disk_write_bytes"] = disk.write_bytes
        with contextlib.suppress(Exception):
            net = self._psutil.net_io_counters()
            if net is not None:
                counters["net_sent_bytes"] = net.bytes_sent
                counters["net_recv_bytes"] = net.bytes_recv
        return counters

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._report(self.sample())
            except Exception:
                logger.debug("node sampling failed", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._gpus.close()
