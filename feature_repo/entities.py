"""Feast entities: the ids other teams look features up by."""

from feast import Entity, ValueType

# A person using the feed (viewer); new users have few or no activity rows.
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64, description="Feed user (viewer).")

# A published note or video; new items have content features long before they have stats.
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64, description="Published item.")

# A user who publishes items; author quality helps rank an author's brand-new items.
author = Entity(name="author", join_keys=["author_id"], value_type=ValueType.INT64, description="Item author.")
