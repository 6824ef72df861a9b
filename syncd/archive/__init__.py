"""The image archive: every image an artwork references, kept before the API deletes it.

plan      pure: what to fetch first, when to try again, one host's share, what a file is
files     the content-addressed folder (atomic, deduplicated, through its own descriptors)
fetch     image downloads: their own pace, no credentials, bounded redirects
discover  images recorded as their artworks are written; the walk of those stored before
rows      the archive job's statements: what is due, outcomes, the lag
job       one archive run: every image recorded, fetched in deadline order, outcomes in batches
verify    the archive's files hashed again, bounded and never through a planted name
"""
