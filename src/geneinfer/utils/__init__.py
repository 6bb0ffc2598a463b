"""Small system helpers shared by every layer: atomic files, libc calls, allocator tuning."""
