"""The image archive: every image an artwork references, kept before the API deletes it.

plan     pure: what to fetch first, when to try again, what a file is
files    the content-addressed folder (atomic, deduplicated, verified)
fetch    image downloads: their own pace, no credentials, bounded redirects
rows     the archived_files statements (discovery, selection, outcomes)
job      one archive run: discover, fetch in deadline order, record
"""
