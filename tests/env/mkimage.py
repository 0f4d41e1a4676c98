#!/usr/bin/env python3
"""Writes OCI image archives (oci-layout + index.json + blobs, as `ctr images import` reads them) from
files on this machine: no registry, no Docker daemon. Archives are reproducible (fixed mtimes, sorted
entries), so the same inputs give the same digests.

  mkimage.py busybox OUT.tar PAUSE_NAME BUSYBOX_NAME
      two images sharing one busybox-static layer: a pod sandbox ("pause": sleeps until SIGTERM) and a
      busybox shell for tests
  mkimage.py binary OUT.tar NAME BINARY [--path /usr/local/bin/ebb] [--user 65532:65532] [--arg A]...
      a distroless-like image of one program: the binary, the shared libraries `ldd` lists (with the
      dynamic loader), CA certificates, /etc/passwd with root and nonroot (65532), /tmp; it runs as
      --user with ENTRYPOINT [--path, --arg...]. This is what the repository's Dockerfile produces on
      gcr.io/distroless/cc-debian12:nonroot (same binary path, user and entrypoint).
"""
import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

MTIME = 1700000000
CREATED = "2023-11-14T22:13:20Z"
BUSYBOX = "/bin/busybox"
APPLETS = ["sh", "sleep", "httpd", "echo", "cat", "ls", "ps", "wget", "env", "hostname", "ip", "id",
           "true", "false", "mkdir", "date", "nc", "seq", "kill", "grep", "printf", "head", "tail", "wc"]
PASSWD = b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
GROUP = b"root:x:0:\nnonroot:x:65532:\n"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


class Layer:
    """One uncompressed layer tar, built in memory; parent directories are added once, in order."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)
        self.dirs = set()

    def _info(self, name, type_, mode, size=0, linkname="", owner=0):
        t = tarfile.TarInfo(name)
        t.type, t.mode, t.size, t.linkname, t.mtime = type_, mode, size, linkname, MTIME
        t.uid = t.gid = owner
        t.uname = t.gname = "root" if owner == 0 else ""
        return t

    def dir(self, name, mode=0o755, owner=0):
        name = name.strip("/")
        parts = name.split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d and d not in self.dirs:
                self.dirs.add(d)
                last = i == len(parts)
                self.tar.addfile(self._info(d, tarfile.DIRTYPE, mode if last else 0o755, owner=owner if last else 0))

    def file(self, name, data, mode=0o644):
        name = name.strip("/")
        self.dir(os.path.dirname(name))
        self.tar.addfile(self._info(name, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))

    def symlink(self, name, target):
        name = name.strip("/")
        self.dir(os.path.dirname(name))
        self.tar.addfile(self._info(name, tarfile.SYMTYPE, 0o777, linkname=target))

    def bytes(self):
        self.tar.close()
        return self.buf.getvalue()


class Archive:
    """Blobs and manifests of one OCI layout."""

    def __init__(self):
        self.blobs = {}
        self.manifests = []

    def blob(self, data):
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        self.blobs[d] = data
        return {"digest": d, "size": len(data)}

    def image(self, name, layers, config):
        diff_ids = []
        descs = []
        for layer in layers:
            b = self.blob(layer)
            diff_ids.append(b["digest"])
            descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", **b})
        cfg = {"architecture": "amd64", "os": "linux", "created": CREATED, "config": config,
               "rootfs": {"type": "layers", "diff_ids": diff_ids},
               "history": [{"created": CREATED, "created_by": "tests/env/mkimage.py"} for _ in layers]}
        c = self.blob(json.dumps(cfg, sort_keys=True).encode())
        man = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
               "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **c}, "layers": descs}
        m = self.blob(json.dumps(man, sort_keys=True).encode())
        self.manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", **m,
                               "platform": {"architecture": "amd64", "os": "linux"},
                               "annotations": {"io.containerd.image.name": name,
                                               "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}})

    def write(self, out):
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": self.manifests}
        tmp = out + ".tmp"
        with tarfile.open(tmp, "w") as tf:
            def add(name, data=None):
                t = tarfile.TarInfo(name)
                t.mtime = MTIME
                if data is None:
                    t.type, t.mode = tarfile.DIRTYPE, 0o755
                    tf.addfile(t)
                else:
                    t.size, t.mode = len(data), 0o644
                    tf.addfile(t, io.BytesIO(data))
            add("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
            add("index.json", json.dumps(index, sort_keys=True).encode())
            add("blobs")
            add("blobs/sha256")
            for d in sorted(self.blobs):
                add("blobs/sha256/" + d.split(":", 1)[1], self.blobs[d])
        os.replace(tmp, out)


def busybox(args):
    layer = Layer()
    for d in ["bin", "dev", "etc", "proc", "sys", "var", "run", "www"]:
        layer.dir(d)
    layer.dir("tmp", 0o1777)
    layer.file("bin/busybox", open(BUSYBOX, "rb").read(), 0o755)
    for a in APPLETS:
        layer.symlink("bin/" + a, "busybox")
    layer.file("etc/passwd", PASSWD.replace(b"/sbin/nologin", b"/bin/sh"))
    layer.file("etc/group", GROUP)
    layer.file("www/index.html", b"hello from a pod on the ebb test node\n")
    data = layer.bytes()
    archive = Archive()
    base = {"Env": ["PATH=/bin"], "WorkingDir": "/"}
    pause = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]
    archive.image(args.pause_name, [data], {**base, "Entrypoint": pause})
    archive.image(args.busybox_name, [data], {**base, "Cmd": ["sh"]})
    archive.write(args.out)


def shared_libraries(binary):
    """The absolute paths `ldd` resolves for `binary`, the dynamic loader included ([] if static)."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if out.returncode != 0:
        if "not a dynamic executable" in out.stdout + out.stderr:
            return []
        sys.exit(f"ldd {binary} failed: {out.stderr.strip()}")
    libs = []
    for line in out.stdout.splitlines():
        line = line.strip()
        if "=> not found" in line:
            sys.exit(f"{binary}: a shared library is missing: {line}")
        path = line.split("=>", 1)[1] if "=>" in line else line
        path = path.split("(")[0].strip()
        if path.startswith("/"):
            libs.append(path)
    return sorted(set(libs))


def binary(args):
    base = Layer()
    base.dir("etc")
    base.dir("tmp", 0o1777)
    base.dir("home/nonroot", 0o700, owner=65532)
    base.file("etc/passwd", PASSWD)
    base.file("etc/group", GROUP)
    base.file("etc/nsswitch.conf", b"hosts: files dns\n")
    if os.path.exists(CA_BUNDLE):
        base.file(CA_BUNDLE, open(CA_BUNDLE, "rb").read())
    for lib in shared_libraries(args.binary):
        # the real file's bytes under the name the binary asks for (symlinks dereferenced)
        base.file(lib, open(os.path.realpath(lib), "rb").read(), 0o755)
    app = Layer()
    app.file(args.path, open(args.binary, "rb").read(), 0o755)
    config = {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "WorkingDir": "/",
              "User": args.user, "Entrypoint": [args.path, *args.arg]}
    archive = Archive()
    archive.image(args.name, [base.bytes(), app.bytes()], config)
    archive.write(args.out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("busybox")
    b.add_argument("out")
    b.add_argument("pause_name")
    b.add_argument("busybox_name")
    b.set_defaults(run=busybox)
    x = sub.add_parser("binary")
    x.add_argument("out")
    x.add_argument("name")
    x.add_argument("binary")
    x.add_argument("--path", default="/usr/local/bin/app")
    x.add_argument("--user", default="65532:65532")
    x.add_argument("--arg", action="append", default=[])
    x.set_defaults(run=binary)
    args = p.parse_args()
    args.run(args)
    print(args.out, file=sys.stderr)


if __name__ == "__main__":
    main()
