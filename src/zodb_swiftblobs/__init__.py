"""Keep ZODB blobs in OpenStack Swift."""
