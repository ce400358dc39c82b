"""Live updates of the overview: the feed of lane rows (``lane_feed``) and its HTTP endpoints (``views``)."""

from hub.web.live.lane_feed import DEFAULTS, LaneFeed, close_feed, feed

__all__ = ["DEFAULTS", "LaneFeed", "close_feed", "feed"]
