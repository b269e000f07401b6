"""A source's GitHub token, encrypted at rest (skillmeat/core/crypto.py; docs/security.md).

A table of its own so that column grants can keep the ciphertext from the request
roles: members may write a token (set, replace, clear) and see that one exists, never
read it back. Only the worker (which scans with it) and admin (rotation) read it.
"""

import datetime as dt
import uuid

from sqlalchemy import CheckConstraint, ForeignKey, LargeBinary, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from skillmeat.core.models.base import Base

# Repeated verbatim in the revision (which must not import this module).
NONCE_BYTES = 12
KEY_ID_CHECK = "key_id ~ '^[A-Za-z0-9_.-]{1,64}$'"


class MarketplaceSourceToken(Base):
    __tablename__ = "marketplace_source_tokens"
    __table_args__ = (
        CheckConstraint(KEY_ID_CHECK, name="key_id_shape"),
        CheckConstraint(f"octet_length(nonce) = {NONCE_BYTES}", name="nonce_length"),
        # A GCM tag (16 bytes) and at least one byte of token; GitHub tokens are short.
        CheckConstraint("octet_length(ciphertext) BETWEEN 17 AND 4096", name="ciphertext_length"),
    )

    source_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("marketplace_sources.id", ondelete="CASCADE"), primary_key=True
    )
    # Which SKILLMEAT_TOKEN_KEYS entry encrypted it; rotation re-encrypts the others.
    key_id: Mapped[str] = mapped_column(Text)
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
