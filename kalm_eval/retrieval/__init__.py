"""First stage: candidate rankings (BM25, dense, or a given TREC run), cached as TREC runs with manifests."""
