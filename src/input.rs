//! The seed GraphQL query-variable shapes. (in progress)
