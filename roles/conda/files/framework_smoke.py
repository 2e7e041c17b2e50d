"""Smoke test of the framework in the environment's own Python (spotbox, conda role).

Argument: "gpu" (the box has a GPU the build was chosen for: CUDA must be
available and a matrix product must run on the device) or "cpu" (the build
imports and computes). Prints one JSON line; exits 1 when the check fails.
"""

import json
import sys

want_gpu = sys.argv[1:] == ["gpu"]
out = {"python": sys.executable, "mode": "gpu" if want_gpu else "cpu"}
try:
    import torch

    out["version"] = torch.__version__
    out["cuda"] = torch.version.cuda or ""
    out["available"] = bool(torch.cuda.is_available())
    if want_gpu:
        if not out["available"]:
            raise RuntimeError("torch.cuda.is_available() is False")
        a = torch.ones((64, 64), device="cuda")
        total = float((a @ a).sum().item())
        torch.cuda.synchronize()
        if total != 64.0**3:
            raise RuntimeError(f"a matrix product on the GPU gave {total}, not {64.0**3}")
        out["device"] = torch.cuda.get_device_name(0)
    else:
        a = torch.ones((8, 8))
        if float((a @ a).sum()) != 512.0:
            raise RuntimeError("a matrix product on the CPU gave a wrong result")
except Exception as exc:  # every failure is reported, in one line
    out["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    print(json.dumps(out))
    sys.exit(1)
print(json.dumps(out))
