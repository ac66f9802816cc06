//! The podrestore node agent.
