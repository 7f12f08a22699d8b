//! Executors: the trait, the shared bash wrapper, and retries. (in progress)
