"""Compiling with TorchScript: once per process, from several threads at once, and None where it fails."""

from __future__ import annotations

import threading

import torch

from rlhfkit.utils.torchscript import forget_compiled, scripted


def doubled_sum(values: torch.Tensor) -> torch.Tensor:
    return (values * 2).sum()


def test_threads_that_ask_at_once_get_the_one_compiled_function(monkeypatch) -> None:
    compiles, start = [], threading.Barrier(4)
    original = torch.jit.script
    monkeypatch.setattr(torch.jit, "script", lambda function: compiles.append(1) or original(function))
    forget_compiled()
    results = [None] * 4

    def ask(index: int) -> None:
        start.wait()
        results[index] = scripted(doubled_sum)

    threads = [threading.Thread(target=ask, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    forget_compiled()
    assert len(compiles) == 1 and results[0] is not None and all(result is results[0] for result in results)
    assert float(results[0](torch.arange(4.0))) == 12.0


def test_a_function_that_does_not_compile_runs_eagerly(monkeypatch) -> None:
    def fails(function: object) -> object:
        raise RuntimeError("no TorchScript here")

    monkeypatch.setattr(torch.jit, "script", fails)
    forget_compiled()
    try:
        assert scripted(doubled_sum) is None
    finally:
        monkeypatch.undo()
        forget_compiled()
