#include "ps_jobinfo.h"

const char *const ps_mode_names[3] = {"sync", "ssp", "async"};

const char *ps_mode_name(uint32_t mode)
{
    return mode < 3 ? ps_mode_names[mode] : "?";
}
