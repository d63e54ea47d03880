//! A local process speaking the OpenAI wire format, for tests and the local stack.
