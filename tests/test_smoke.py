from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.orm import Session

from skillmeat.core.database.provision import alembic_config


def test_test_database_is_migrated_to_head(session: Session) -> None:
    version = session.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()
