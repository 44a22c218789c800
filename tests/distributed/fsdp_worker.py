"""One process of a multi-process launch that runs several tether commands in a row (tests/distributed/test_fsdp.py).

``python -m torch.distributed.run ... tests/distributed/fsdp_worker.py '<json list of steps>'``; each step is a
tether command line (a list of arguments, run exactly as ``tether <args>`` runs it), ``{"copy": [source, target]}``
or ``{"remove": path}``: the main process copies that folder or deletes that file or folder, and every process
waits for it. One launch for several recipes keeps the
start-up cost of the processes (importing torch and transformers) to once.
"""

import json
import shutil
import sys
from pathlib import Path

from tether.cli import app
from tether.utils.distributed import Dist


def main(steps: list) -> int:
    for step in steps:
        if isinstance(step, dict):
            if Dist.current().is_main:
                if "copy" in step:
                    shutil.copytree(*step["copy"])
                else:
                    target = Path(step["remove"])
                    shutil.rmtree(target) if target.is_dir() else target.unlink()
            Dist.current().barrier()
            continue
        code = app(step, standalone_mode=False, prog_name="tether")
        if code:
            return int(code)
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
