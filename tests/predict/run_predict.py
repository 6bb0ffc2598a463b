"""Run predict_file in a subprocess (for kill -9 and file-size-limit tests).

Usage: python run_predict.py '{"model": DIR, "input": F, "output": F, "delay": 0.1, ...}'
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    args = json.loads(sys.argv[1])
    if args.get("fsize"):
        resource.setrlimit(resource.RLIMIT_FSIZE, (args["fsize"], args["fsize"]))
    from helpers import SlowPredict

    from geneinfer.errors import GeneinferError
    from geneinfer.predict import as_predictor, predict_file

    pred = as_predictor(args["model"])
    if args.get("delay"):
        # same checksum (from the model directory), slower predictions
        pred.predict_fn = SlowPredict(pred.model, args["delay"])
        pred.model = None
    try:
        predict_file(pred, args["input"], args["output"], block_size=args["block_size"],
                     workers=args.get("workers", 1), threads=args.get("threads"),
                     progress=False)
    except GeneinferError as exc:
        print(f"geneinfer: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
