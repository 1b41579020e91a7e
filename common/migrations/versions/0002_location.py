"""location history, last known position, sharing, places, place states, group events

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _user_fk():
    return sa.ForeignKey("users.id", ondelete="CASCADE")


def _group_fk():
    return sa.ForeignKey("groups.id", ondelete="CASCADE")


def _fix_columns():
    return [
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("accuracy_m", sa.Float(), nullable=False),
        sa.Column("speed_mps", sa.Float(), nullable=True),
        sa.Column("heading_deg", sa.Float(), nullable=True),
        sa.Column("battery_pct", sa.Integer(), nullable=True),
        sa.Column("received_at", sa.Float(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "location_points",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), _user_fk(), nullable=False),
        *_fix_columns(),
    )
    op.create_index("ix_location_points_ts", "location_points", ["ts"])
    op.create_index("ix_location_points_user_id_ts", "location_points", ["user_id", "ts"])
    op.create_table(
        "last_locations",
        sa.Column("user_id", sa.Integer(), _user_fk(), primary_key=True),
        *_fix_columns(),
    )
    op.create_table(
        "location_sharing",
        sa.Column("group_id", sa.Integer(), _group_fk(), primary_key=True),
        sa.Column("user_id", sa.Integer(), _user_fk(), primary_key=True),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("precision", sa.String(16), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "places",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("group_id", sa.Integer(), _group_fk(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("radius_m", sa.Float(), nullable=False),
        sa.Column("created_by", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_places_group_id", "places", ["group_id"])
    op.create_table(
        "place_states",
        sa.Column(
            "place_id", sa.Integer(), sa.ForeignKey("places.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("user_id", sa.Integer(), _user_fk(), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("last_ts", sa.Float(), nullable=False),
    )
    op.create_table(
        "group_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("group_id", sa.Integer(), _group_fk(), nullable=False),
        sa.Column("user_id", sa.Integer(), _user_fk(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column(
            "place_id", sa.Integer(), sa.ForeignKey("places.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("place_name", sa.String(64), nullable=True),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("ts", sa.Float(), nullable=False),
    )
    op.create_index("ix_group_events_group_id_ts", "group_events", ["group_id", "ts"])


def downgrade() -> None:
    op.drop_table("group_events")
    op.drop_table("place_states")
    op.drop_table("places")
    op.drop_table("location_sharing")
    op.drop_table("last_locations")
    op.drop_table("location_points")
