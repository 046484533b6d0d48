"""A real S3 API server on the loopback for the tests: moto's standalone server (``moto[server]``, dev extra),
started as its own process with authentication on, one IAM user whose key the tests use, and helpers to upload
a folder. Nothing leaves the machine."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.procs import stop_group

BIN = Path(sys.executable).parent
REGION = "us-east-1"
# requests served without checking credentials, used to create the IAM user whose key the tests sign with;
# every later request must carry that key (a wrong secret is refused: ACCESS_DENIED)
SETUP_ACTIONS = 4


@dataclass
class S3Server:
    url: str
    access_key: str
    secret_key: str
    proc: subprocess.Popen
    log: Path

    def env(self, **changes: str) -> dict[str, str]:
        """The environment variables a client of this server needs (endpoint, region, credentials)."""
        out = {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",  # never ask an instance metadata service from a test
        }
        out.update(changes)
        return out

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def upload(self, folder: Path, bucket: str, prefix: str) -> str:
        """Create ``bucket`` (if needed) and upload every file under ``folder`` to ``prefix``; the s3:// URI."""
        s3 = self.client()
        if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
            s3.create_bucket(Bucket=bucket)
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")
        return f"s3://{bucket}/{prefix}"

    def object_gets(self) -> list[str]:
        """The object paths GET requests asked for, in the order the server logged them."""
        text = re.sub(r"\x1b\[[0-9;]*m", "", self.log.read_text())  # the server colours some lines
        return re.findall(r'"GET (/[^?\s]+/[^?\s]+) HTTP/1\.1" 20[06] ', text)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def s3_server(work: Path) -> Iterator[S3Server]:
    """Start moto's server on a free loopback port with authentication on; stop it afterwards."""
    import boto3

    port = _free_port()
    log = work / "moto.log"
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        env={"PATH": str(BIN), "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_ACTIONS), "HOME": str(work)},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):
                    break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise AssertionError(f"moto_server did not start:\n{log.read_text()[-2000:]}") from None
                time.sleep(0.3)
        iam = boto3.client(
            "iam",
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        iam.create_user(UserName="sepray-test")
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        arn = iam.create_policy(PolicyName="all", PolicyDocument=json.dumps(policy))["Policy"]["Arn"]
        iam.attach_user_policy(UserName="sepray-test", PolicyArn=arn)
        key = iam.create_access_key(UserName="sepray-test")["AccessKey"]
        yield S3Server(url, key["AccessKeyId"], key["SecretAccessKey"], proc, log)
    finally:
        stop_group(proc)
