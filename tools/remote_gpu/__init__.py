"""A zoo entry trained on a remote GPU machine reachable only by copying files, and the recipe race on it.

The command line is ``tools/gpu_campaign.py``; its jobs live here, one module each:

- :mod:`.settings`: the machine's limits (what travels, what comes back, the call's deadline) and the defaults;
- :mod:`.pack`: here, before a call: the data and wheels to carry, the size that travels, the device commands;
- :mod:`.device`: there: the call's log, the carried wheels installed, the children's environment;
- :mod:`.parts`: one tar stream in parts of at most 16 MiB, each hashed (there), checked and extracted (here);
- :mod:`.calibrate`: there: time the preset's step and size its schedule to the training budget;
- :mod:`.train` and :mod:`.race`: there: the campaign chunk, packed; the recipe race's three arms;
- :mod:`.unpack`: here, after a call: the run into the long-runs home, its records into ``benchmarks/records/``.
"""

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:  # harness (the result envelope) and learn_check (the gate), imported by name
    sys.path.insert(0, str(BENCHMARKS))
