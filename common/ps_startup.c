#include "ps_startup.h"

static const ps_step_info_t STEPS[PS_STEP_COUNT] = {
    [PS_STEP_FLAGS] = {"flags", PS_STEP_AGREE, "flags valid on every rank, servers' ports bound"},
    [PS_STEP_EXCHANGE] = {"exchange", PS_STEP_EXCHANGE_ALL,
                          "endpoints, host names, public keys and streams of every rank"},
    [PS_STEP_SETTINGS] = {"settings", PS_STEP_BCAST_SERVER0,
                          "server 0's settings: chunk size, mode, schedule"},
    [PS_STEP_PORTS] = {"ports", PS_STEP_AGREE,
                       "servers' allow lists and endpoint file, workers' data and model"},
    [PS_STEP_MODEL] = {"model", PS_STEP_AGREE, "every worker declared the same model and plan"},
    [PS_STEP_PLAN] = {"plan", PS_STEP_BCAST_WORKER0,
                      "worker 0's plan: steps per epoch, total steps"},
    [PS_STEP_RESUME] = {"resume", PS_STEP_AGREE, "every server loaded the same checkpoint"},
    [PS_STEP_REGISTER] = {"register", PS_STEP_AGREE,
                          "workers connected, worker 0's model registered on every server"},
    [PS_STEP_START] = {"start", PS_STEP_BCAST_SERVER0, "the step training starts at"},
    [PS_STEP_DONE] = {"done", PS_STEP_AGREE, "training over, the servers' --save and trace"},
};

const ps_step_info_t *ps_step_info(int s)
{
    return s >= 0 && s < PS_STEP_COUNT ? &STEPS[s] : 0;
}

const char *ps_step_name(int s)
{
    const ps_step_info_t *i = ps_step_info(s);
    return i ? i->name : "?";
}
