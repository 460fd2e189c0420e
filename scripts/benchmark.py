"""Training and inference throughput (images/s) and peak memory of a configuration on this machine's device.

    python scripts/benchmark.py --groups 6 --group_size 11 --amp bf16 --compile    # = python -m promptiqa benchmark
(see promptiqa/engine/benchmark.py)
"""
from promptiqa.cli import script

if __name__ == "__main__":
    script("benchmark")
