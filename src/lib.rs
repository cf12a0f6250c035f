//! librmq: the RMQ.* Redis module.
