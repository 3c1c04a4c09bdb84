"""Online sources: fetch a person's public posts from X (API v2), Bluesky and Mastodon.

`http` is the retrying client they share, `fetch` the incremental, resumable orchestration that
commits every page to the store as it arrives; `x_api`, `bluesky` and `mastodon` each turn one
platform's responses into `Post` records.
"""
