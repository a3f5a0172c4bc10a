"""Generate server/rpc/pb from protos/ and make the generated modules importable in place.

grpcio-tools writes absolute imports (`from storefront.v1 import x_pb2`); they are rewritten to
`from server.rpc.pb.storefront.v1 import x_pb2` so nothing has to touch sys.path.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "server" / "rpc" / "pb"
PACKAGE = "server.rpc.pb"
_IMPORT_RE = re.compile(r"^from (storefront(?:\.\w+)*) import", re.MULTILINE)


def main() -> int:
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={OUT}",
        f"--pyi_out={OUT}",
        f"--grpc_python_out={OUT}",
        *sources,
    ]
    if protoc.main(args) != 0:
        return 1
    for path in OUT.rglob("*.py*"):
        text = path.read_text()
        path.write_text(_IMPORT_RE.sub(lambda m: f"from {PACKAGE}.{m.group(1)} import", text))
    for directory in [OUT, *(p for p in OUT.rglob("*") if p.is_dir())]:
        (directory / "__init__.py").touch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
