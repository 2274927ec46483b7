"""The cache service: CLIP/MiniLM retrieval over Milvus, image bytes in S3, eviction, tenants."""
