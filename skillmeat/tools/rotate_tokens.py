"""`skillmeat-db rotate-token-keys`: re-encrypt every source token under the first key.

One admin transaction per batch, so an interrupted run keeps what it committed and a
new run picks up the rest (a rotated token is under the first key, and is not seen
again): resumable and idempotent. Tokens whose key id is not configured are listed
by source id and left alone.
"""

import argparse
import uuid

from skillmeat.core import crypto
from skillmeat.core.database import make_engine, make_session_factory, tenant_scope
from skillmeat.core.repositories.tokens import (
    RotationReport,
    rotate_token_batch,
    tokens_to_rotate,
)
from skillmeat.tools.console import ProgressBar


def run(args: argparse.Namespace) -> RotationReport:
    keyring = crypto.required_keyring()  # before connecting: a missing key is one line
    engine = make_engine(args.url)
    sessions = make_session_factory(engine)
    try:
        with sessions() as session, tenant_scope(session, admin=True):
            total = tokens_to_rotate(session)
        report = RotationReport(primary_key_id=keyring.primary_id)
        bar = ProgressBar(f"re-encrypting tokens under key {keyring.primary_id!r}")
        after: uuid.UUID | None = None
        done = 0
        try:
            while True:
                with sessions() as session, tenant_scope(session, admin=True):
                    batch, after = rotate_token_batch(
                        session, after=after, batch_size=args.batch_size
                    )
                report.add(batch)
                done += batch.rotated + batch.left_alone
                bar(done, max(total, done), f"{report.rotated} rotated")
                if after is None:
                    break
        finally:
            bar.close(f"{report.rotated} rotated, {report.left_alone} left alone")
    finally:
        engine.dispose()
    print(
        f"{report.rotated} token(s) re-encrypted under key {report.primary_key_id!r}; "
        f"{report.left_alone} left alone"
    )
    for source_id in report.unknown_key:
        print(f"source {source_id}: key id not in {crypto.KEYS_ENV}; left alone")
    for source_id in report.undecryptable:
        print(f"source {source_id}: token does not decrypt; left alone")
    return report
