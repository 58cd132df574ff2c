"""A Ray task that asks for no GPU sees none (``tune_adapter.WORKER_ENV``).

Ray 2.60 stopped clearing CUDA_VISIBLE_DEVICES for tasks with ``num_gpus=0``; a stage would then
pick the node's GPU outside Ray's accounting. Checked on a local Ray that is told it has two GPUs
(no GPU is needed: Ray only sets the variable), in a subprocess so this test's Ray is its own.
"""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import json, os, ray
from salient.platform.tune_adapter import WORKER_ENV

os.environ["CUDA_VISIBLE_DEVICES"] = "0,1"  # the node's GPUs, as a GPU node's environment has them
ray.init(num_cpus=1, num_gpus=2, include_dashboard=False, runtime_env=WORKER_ENV, logging_level="ERROR")

@ray.remote(num_gpus=0)
def cpu_task():
    return os.environ.get("CUDA_VISIBLE_DEVICES")

@ray.remote(num_gpus=1)
def gpu_task():
    return os.environ.get("CUDA_VISIBLE_DEVICES")

print(json.dumps({"cpu": ray.get(cpu_task.remote()), "gpu": ray.get(gpu_task.remote())}))
ray.shutdown()
"""


def test_a_task_without_gpus_sees_no_gpu() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["cpu"] == ""  # hidden: torch.cuda.is_available() is False there
    assert seen["gpu"] in ("0", "1")  # the one GPU Ray gave the task
