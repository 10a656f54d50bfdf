#ifndef CRIRT_MONITOR_FORKSERVER_H
#define CRIRT_MONITOR_FORKSERVER_H

/* forkserver.main: prints "ready <pid>" or "busy"; the server itself never returns. */
_Noreturn void fork_server(const char *path, const char *code);

#endif
