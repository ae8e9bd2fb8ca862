"""Tests of the orchestration patterns; each asserts the whole journal of the runs involved."""
