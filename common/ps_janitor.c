#include "ps_janitor.h"

#include "ps_err.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

void ps_janitor_init(ps_janitor_t *j)
{
    j->pid = 0;
    j->fd = -1;
}

void ps_janitor_start(ps_janitor_t *j, const char *script, const char *name, const char *path)
{
    int p[2];
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    char *argv[] = {"sh", "-c", (char *)script, (char *)name, (char *)path, NULL};
    extern char **environ;
    ps_janitor_init(j);
    if (pipe2(p, O_CLOEXEC) != 0) {
        ps_log_debug("no janitor for %s (no pipe): a process killed outright leaves it behind",
                     path);
        return;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[0], 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    posix_spawnattr_init(&at);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&at, 0);
    if (posix_spawn(&j->pid, "/bin/sh", &fa, &at, argv, environ) == 0) {
        j->fd = p[1];
    } else {
        j->pid = 0;
        close(p[1]);
        ps_log_debug("no janitor for %s (cannot run /bin/sh): a process killed outright "
                     "leaves it behind",
                     path);
    }
    close(p[0]);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
}

void ps_janitor_stop(ps_janitor_t *j)
{
    if (j->fd >= 0) {
        close(j->fd);
        waitpid(j->pid, NULL, 0);
    }
    ps_janitor_init(j);
}
