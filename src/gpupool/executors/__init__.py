"""Where work actually runs: one protocol (launch / poll / stop / kill / logs / adopt), with a
local-process implementation (and, later, Ray). Executors never import the server."""
