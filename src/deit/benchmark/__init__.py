"""``deit benchmark``: our models against HF transformers' DeiT with the same weights, in the same process.

Inference and training-step images/s (alternating rounds, median and spread), each as a fraction of a GEMM timed in
the same rounds, peak memory, and the data pipeline's images/s per worker. See ``docs/results/benchmark-cpu.md``.

    from deit.benchmark import BenchmarkConfig, run_benchmark, format_table
    header, rows = run_benchmark(BenchmarkConfig(models=("deit_tiny_patch16_224",)))
    print(format_table(rows, header))
"""

from deit.benchmark.common import TASKS, BenchmarkConfig
from deit.benchmark.report import FLOPS_CONVENTION, Row, format_table, to_json
from deit.benchmark.suite import quick_config, run_benchmark
from deit.benchmark.timing import Samples, race

__all__ = [
    "FLOPS_CONVENTION",
    "TASKS",
    "BenchmarkConfig",
    "Row",
    "Samples",
    "format_table",
    "quick_config",
    "race",
    "run_benchmark",
    "to_json",
]
