"""Sans-I/O codecs: record framings and ESP, fed buffers inside packets; no sockets, threads or clocks."""
