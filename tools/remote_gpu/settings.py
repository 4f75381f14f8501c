"""The remote machine's limits and the procedure's defaults, each with its reason.

The machine takes a copy of the checkout plus named folders (64 MiB in all), runs one command (at most 10
minutes), and returns the files its command leaves in ``$OUT`` (8 files, 16 MiB each).
"""

from __future__ import annotations

from tools.campaign import RECORDS

from harness import ROOT

NAME = "gpu_campaign"
SCRIPT = "tools/gpu_campaign.py"  # the command line, from the checkout's root
ENTRY = "barlowtwins_resnet18_cifar10_v2"
DATA_NAME = "uoft-cs/cifar10"
SHARED_DATA = ROOT.parent / "shared" / "data" / "cifar10"  # this machine's full CIFAR-10 (uoft-cs/cifar10 layout)
GPU_DATA = ROOT / ".gpudata" / "cifar10"  # what travels: the full train split, the first test rows
WHEELS = ROOT / ".whl"
GPU_RUNS = ROOT / ".gpurun"  # the run folder on the device (ignored; a second call on a warm machine resumes it)
CAMPAIGN_RECORDS = ROOT / "benchmarks" / "records" / "campaign"  # where `unpack` copies a run's records
DEVICE_SITE = "/tmp/site"  # where the wheels are installed on the device
WHEEL_PINS = ("datasets==5.2.0", "dill==0.4.1", "multiprocess==0.70.19", "fsspec==2026.9.0", "timm==1.0.31")
# fsspec: datasets pins it <= 2026.9.0 and the device image's may be newer; the carried one comes first on the path.
# timm: its Lars is the published Barlow Twins arm's optimiser (benchmarks/studies/fair_race.py)
# what the device image has already (datasets' other requirements must be among these)
DEVICE_HAS = {"torch", "torchvision", "accelerate", "huggingface-hub", "safetensors", "pyarrow", "pandas", "numpy", "pillow",
              "fsspec", "xxhash", "pyyaml", "tqdm", "requests", "filelock", "matplotlib", "packaging"}
# The device time of a session is 900 s in all, its start, the wait between calls and both calls included: the
# flagship's call (DEADLINE, TIMEOUT_S) and the race's (RACE_*) leave ~130 s of it for the rest. Per-process overhead
# on the H200 (benchmarks/records/campaign/barlowtwins_resnet18_cifar10_gpu/gpu_campaign_call1.json, 2026-12-04): a
# 25 s calibration run took 46.7 s of wall time (imports, 10 s to decode the train split, cuDNN's autotuning).
RACE_BUDGET = 40.0  # training seconds of each race arm at most; fair_race.py lowers it to what the deadline holds
RACE_DEADLINE = 235.0  # wall seconds of `race` after which a running arm is stopped
RACE_TIMEOUT_S = 250  # the race call's timeout_s
PIPELINE_SECONDS = 45.0  # wall seconds the step timing (benchmarks/pipeline.py) needs after the campaign
MONITOR_ROWS = 2000  # test rows that travel: the kNN monitor's queries during training
MIB = 1 << 20
TRAVEL_LIMIT = 64 * MIB  # the checkout plus the carried paths
RETURN_FILES = 8  # files that come back from $OUT, each at most 16 MiB
PART_MIB = 15.0
BUDGET = 330.0  # training seconds (wall clock); decoding, kNN, the export and the step timing come on top
DEADLINE = 500.0  # wall seconds of `train` after which the campaign is stopped and what exists is packed
TIMEOUT_S = 520  # the device call's timeout_s
CALIBRATE = 20.0  # training seconds of the calibration run that times the preset's step on this GPU
# A compiled calibration run costs a second process (~22 s above), its own compile and its timed steps, and the
# campaign then compiles again: with C seconds of compile, compile must run faster than eager by more than
# 330 / (330 - C - 22 - 20) just to repay the probe (1.3x at C = 30 s). Off by default; `--compile_probe 40`
# measures it (compile_pays) where a call has time to spare.
COMPILE_PROBE = 0.0  # further training seconds of a second, compiled calibration run (inductor compiles inside it)
# H200, 2026-12-04: calibration timed 59.8 steps/s, the campaign averaged 44.4 (kNN, saves, monitors, noise): 0.74
SCHEDULE_SHARE = 0.7  # the share of the budget the schedule is sized to fill (the rest: headroom)
MAX_EPOCHS = 400
SMOKE_EXTRA = ("--limit 64 --eval_limit 64 --batch_size 16 --width 8 --proj_dim 16 --knn_k 10 --knn_every_seconds 1 "
               "--monitors false --run_state_every_seconds 0 --run_state_every 8 --log_every 1 --precision fp32 "
               "--decode_workers 1 --threads 1")
MONITOR_NOTE = (f"kNN monitor during training: bank = the first 10,000 train images (the preset's eval_limit), "
                f"queries = only the first {MONITOR_ROWS:,} rows of test.parquet (the copy that travels); "
                f"the full protocol (recipes/evaluate.py) runs later, off the device")
PACKED = ("export", *RECORDS, "train.log")  # the run's export, the records the campaign keeps, and its log
