"""Control surfaces: each turns outside input into bus events; none touches an element directly."""
