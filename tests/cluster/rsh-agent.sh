#!/bin/sh
# Open MPI's remote-shell agent for the network-namespace test hosts:
#   mpirun --mca plm_rsh_agent "sh tests/cluster/rsh-agent.sh" ...
# Open MPI calls it the way it would call ssh, `agent HOST WORD...`, where
# the words form one shell command line (environment set-up, then orted).
# Like ssh, we join them and hand them to a shell, here inside the
# namespace HOST with HOST as its hostname (see netns.sh `exec`).
set -eu
[ $# -ge 2 ] || { echo "usage: rsh-agent.sh HOST COMMAND..." >&2; exit 2; }
host=$1
shift
exec sh "$(dirname "$0")/netns.sh" exec "$host" sh -c "$*"
