/*
 * Unit tests for common/ps_sched: spec parsing (good and bad), the learning
 * rate at hand-computed points for every kind with and without warm-up, and
 * the describe/parse round trip.  Rates are chosen dyadic where possible so
 * the expected doubles are exact; the cosine's irrational points are checked
 * against values worked out by hand to 16 digits.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ps_err.h"
#include "ps_sched.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static ps_sched_t parse_ok(const char *spec, long long warmup)
{
    ps_sched_t s;
    memset(&s, 0xa5, sizeof s);
    int rv = ps_sched_parse(&s, spec, warmup);
    if (rv != 0) {
        fail_msg("\"%s\" refused: %s", spec, ps_error_msg());
    }
    return s;
}

/* Refused with PS_EINVAL, a detail containing `want`, and *s untouched. */
static void parse_bad(const char *spec, long long warmup, const char *want)
{
    ps_sched_t s, before;
    memset(&s, 0x5a, sizeof s);
    before = s;
    ps_error_clear();
    assert_int_equal(ps_sched_parse(&s, spec, warmup), PS_EINVAL);
    if (strstr(ps_error_msg(), want) == NULL) {
        fail_msg("\"%s\": message \"%s\" does not mention \"%s\"", spec ? spec : "(null)",
                 ps_error_msg(), want);
    }
    assert_memory_equal(&s, &before, sizeof s);
}

static void test_parse_kinds(void **state)
{
    (void)state;
    ps_sched_t s = parse_ok("constant", 0);
    assert_int_equal(s.kind, PS_SCHED_CONSTANT);
    assert_true(s.warmup_steps == 0);
    s = parse_ok("cosine", 0);
    assert_int_equal(s.kind, PS_SCHED_COSINE);
    s = parse_ok("step:30,60:0.1", 0);
    assert_int_equal(s.kind, PS_SCHED_STEP);
    assert_int_equal(s.nmilestones, 2);
    assert_int_equal(s.milestones[0], 30);
    assert_int_equal(s.milestones[1], 60);
    assert_true(s.gamma == 0.1);
    s = parse_ok("step:5", 0); /* gamma defaults to torch's 0.1 */
    assert_int_equal(s.nmilestones, 1);
    assert_int_equal(s.milestones[0], 5);
    assert_true(s.gamma == 0.1);
    s = parse_ok("step:0,4294967295:2.5", 0); /* the whole uint32 range */
    assert_int_equal(s.milestones[0], 0);
    assert_true(s.milestones[1] == UINT32_MAX);
    assert_true(s.gamma == 2.5);
    s = parse_ok("step:1:.5", 0);
    assert_true(s.gamma == 0.5);
}

static void test_parse_sixteen_milestones(void **state)
{
    (void)state;
    ps_sched_t s = parse_ok("step:1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16:0.5", 0);
    assert_int_equal(s.nmilestones, 16);
    for (int i = 0; i < 16; i++) {
        assert_int_equal(s.milestones[i], i + 1);
    }
    parse_bad("step:1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17:0.5", 0, "more than 16 milestones");
}

static void test_parse_warmup(void **state)
{
    (void)state;
    assert_true(parse_ok("constant", 7).warmup_steps == 7);
    assert_true(parse_ok("cosine;warmup=100", 0).warmup_steps == 100);
    assert_true(parse_ok("cosine;warmup=100", 100).warmup_steps == 100); /* same twice */
    ps_sched_t s = parse_ok("step:3:0.5;warmup=12", 0);
    assert_int_equal(s.nmilestones, 1);
    assert_true(s.gamma == 0.5);
    assert_true(s.warmup_steps == 12);
    parse_bad("cosine;warmup=100", 99, "warm-up given twice");
    parse_bad("constant", -1, "negative");
    parse_bad("constant;warmup=", 0, "is not warmup=STEPS");
    parse_bad("constant;warmup=-3", 0, "is not warmup=STEPS");
    parse_bad("constant;warm=3", 0, "is not warmup=STEPS");
    parse_bad("constant;warmup=3;warmup=3", 0, "is not warmup=STEPS");
}

static void test_parse_bad(void **state)
{
    (void)state;
    parse_bad("", 0, "empty");
    parse_bad(NULL, 0, "empty");
    parse_bad("cos", 0, "unknown kind \"cos\"");
    parse_bad("Constant", 0, "unknown kind");
    parse_bad("constant ", 0, "unknown kind");
    parse_bad("step", 0, "unknown kind");
    parse_bad("step:", 0, "step needs milestones");
    parse_bad("step::0.1", 0, "step needs milestones");
    parse_bad("step:30,20:0.1", 0, "strictly increasing (20 after 30)");
    parse_bad("step:30,30:0.1", 0, "strictly increasing (30 after 30)");
    parse_bad("step:30:-1", 0, "gamma \"-1\" is not a finite number > 0");
    parse_bad("step:30:0", 0, "gamma \"0\"");
    parse_bad("step:30:", 0, "gamma \"\"");
    parse_bad("step:30:nan", 0, "gamma \"nan\"");
    parse_bad("step:30:inf", 0, "gamma \"inf\"");
    parse_bad("step:30:1e999", 0, "gamma \"1e999\"");
    parse_bad("step:30: 0.1", 0, "gamma \" 0.1\"");
    parse_bad("step:30:0.1x", 0, "gamma \"0.1x\"");
    parse_bad("step:30:0.1:x", 0, "unexpected text after the gamma");
    parse_bad("step:30,,60", 0, "milestone \"\"");
    parse_bad("step:30,60,", 0, "milestone \"\"");
    parse_bad("step:-1", 0, "milestone \"-1\"");
    parse_bad("step:+1", 0, "milestone \"+1\"");
    parse_bad("step:4294967296", 0, "milestone \"4294967296\"");
    parse_bad("step:99999999999999999999999", 0, "milestone");
    char big[512];
    memset(big, '1', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    parse_bad(big, 0, "longer than");
}

/* cmocka 1.1's float helper rounds to float; compare doubles here. */
static void assert_near(double got, double want, double tol)
{
    if (!(fabs(got - want) <= tol)) {
        fail_msg("got %.17g, want %.17g within %g", got, want, tol);
    }
}

static double lr_at(const ps_sched_t *s, double base, uint64_t t, uint64_t spe, uint64_t total)
{
    return ps_sched_lr(s, base, t, spe, total);
}

static void test_lr_constant(void **state)
{
    (void)state;
    ps_sched_t s = parse_ok("constant", 0);
    assert_true(lr_at(&s, 0.1, 0, 10, 100) == 0.1);
    assert_true(lr_at(&s, 0.1, 12345, 10, 100) == 0.1);
    assert_true(lr_at(&s, 0.1, 7, 0, 0) == 0.1);
}

static void test_lr_step(void **state)
{
    (void)state;
    /* Milestones at epochs 2 and 4, 10 updates an epoch: updates 0..19 at
     * 1, 20..39 at 1*0.5, 40.. at 1*0.5^2. */
    ps_sched_t s = parse_ok("step:2,4:0.5", 0);
    const uint64_t t[] = {0, 19, 20, 39, 40, 1000000};
    const double want[] = {1.0, 1.0, 0.5, 0.5, 0.25, 0.25};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        assert_true(lr_at(&s, 1.0, t[i], 10, 100) == want[i]);
    }
    /* steps_per_epoch 0 reads as 1: update t is epoch t. */
    assert_true(lr_at(&s, 1.0, 1, 0, 0) == 1.0);
    assert_true(lr_at(&s, 1.0, 2, 0, 0) == 0.5);
    assert_true(lr_at(&s, 1.0, 4, 0, 0) == 0.25);
    /* A milestone at epoch 0 applies from the start, as in torch. */
    s = parse_ok("step:0:0.25", 0);
    assert_true(lr_at(&s, 2.0, 0, 10, 100) == 0.5);
    /* base 3 * 0.75^2 = 3 * 0.5625 = 1.6875, exact. */
    s = parse_ok("step:1,2:0.75", 0);
    assert_true(lr_at(&s, 3.0, 5, 3, 100) == 2.25);
    assert_true(lr_at(&s, 3.0, 6, 3, 100) == 1.6875);
}

static void test_lr_cosine(void **state)
{
    (void)state;
    ps_sched_t s = parse_ok("cosine", 0);
    /* base 2, T = 4: t=0 cos 0 = 1 -> 2; t=2 cos(pi/2) ~ 6.1e-17, 1 + that
     * rounds to 1 -> 1 exactly; t=4 cos(pi) = -1 -> 0; t=8 cos(2 pi) = 1 ->
     * 2 again (torch's curve rises past T_max too). */
    assert_true(lr_at(&s, 2.0, 0, 1, 4) == 2.0);
    assert_true(lr_at(&s, 2.0, 2, 1, 4) == 1.0);
    assert_true(lr_at(&s, 2.0, 4, 1, 4) == 0.0);
    assert_true(lr_at(&s, 2.0, 8, 1, 4) == 2.0);
    /* t=1: 1 + cos(pi/4) = 1 + sqrt(2)/2 = 1.7071067811865475244...;
     * t=3: 1 - sqrt(2)/2 = 0.2928932188134524756... */
    assert_near(lr_at(&s, 2.0, 1, 1, 4), 1.7071067811865475, 4e-16);
    assert_near(lr_at(&s, 2.0, 3, 1, 4), 0.2928932188134525, 4e-16);
    /* base 0.1, T = 3, t = 1: 0.1 * (1 + 0.5) / 2 = 0.075 (cos(pi/3) is 0.5
     * only to within an ulp, hence the tolerance). */
    assert_near(lr_at(&s, 0.1, 1, 7, 3), 0.075, 4e-17);
    /* steps_per_epoch plays no part; total 0 means no annealing. */
    assert_true(lr_at(&s, 2.0, 2, 999, 4) == 1.0);
    assert_true(lr_at(&s, 2.0, 2, 1, 0) == 2.0);
}

static void test_lr_warmup(void **state)
{
    (void)state;
    /* W = 4 over a constant 1: (t+1)/4 = 0.25, 0.5, 0.75, then 1 for t >= 3. */
    ps_sched_t s = parse_ok("constant", 4);
    const double want[] = {0.25, 0.5, 0.75, 1.0, 1.0, 1.0};
    for (uint64_t t = 0; t < 6; t++) {
        assert_true(lr_at(&s, 1.0, t, 10, 100) == want[t]);
    }
    /* W = 3 over 0.5: 0.5 * (1/3), 0.5 * (2/3), each rounded as written. */
    s = parse_ok("constant;warmup=3", 0);
    assert_true(lr_at(&s, 0.5, 0, 10, 100) == 0.5 * (1.0 / 3.0));
    assert_true(lr_at(&s, 0.5, 1, 10, 100) == 0.5 * (2.0 / 3.0));
    assert_true(lr_at(&s, 0.5, 2, 10, 100) == 0.5);
    /* W = 1 is no warm-up at all: (0+1)/1 = 1. */
    s = parse_ok("constant", 1);
    assert_true(lr_at(&s, 0.5, 0, 10, 100) == 0.5);
}

static void test_lr_warmup_step(void **state)
{
    (void)state;
    /* step:1:0.5, 2 updates an epoch, W = 4, base 1:
     * t=0 epoch 0: 1 * 1/4 = 0.25;  t=1 epoch 0: 1 * 2/4 = 0.5;
     * t=2 epoch 1: 0.5 * 3/4 = 0.375;  t=3 epoch 1: 0.5 * 4/4 = 0.5;  t=4: 0.5. */
    ps_sched_t s = parse_ok("step:1:0.5", 4);
    const double want[] = {0.25, 0.5, 0.375, 0.5, 0.5};
    for (uint64_t t = 0; t < 5; t++) {
        assert_true(lr_at(&s, 1.0, t, 2, 100) == want[t]);
    }
}

static void test_lr_warmup_cosine(void **state)
{
    (void)state;
    /* cosine over T = 4 with base 2 and W = 2:
     * t=0: 2 * 1/2 = 1;  t=1: 1.70710678118654752 * 2/2;  t=2: 1 * 1 = 1. */
    ps_sched_t s = parse_ok("cosine;warmup=2", 0);
    assert_true(lr_at(&s, 2.0, 0, 1, 4) == 1.0);
    assert_near(lr_at(&s, 2.0, 1, 1, 4), 1.7071067811865475, 4e-16);
    assert_true(lr_at(&s, 2.0, 2, 1, 4) == 1.0);
    /* A warm-up longer than the horizon still ramps: t=4 is cos(pi) = -1
     * times 5/8, i.e. 0; t=7 is past T, cos(7 pi/4) = sqrt(2)/2, times 8/8. */
    s = parse_ok("cosine", 8);
    assert_true(lr_at(&s, 2.0, 4, 1, 4) == 0.0);
    assert_near(lr_at(&s, 2.0, 7, 1, 4), 1.7071067811865475, 4e-16);
}

/* describe gives `want`, and parsing that gives back the same schedule. */
static void round_trip(const char *spec, long long warmup, const char *want)
{
    ps_sched_t a = parse_ok(spec, warmup);
    char txt[256];
    ps_sched_describe(&a, txt, sizeof txt);
    assert_string_equal(txt, want);
    ps_sched_t b = parse_ok(txt, 0);
    assert_memory_equal(&a, &b, sizeof a);
}

static void test_describe_round_trip(void **state)
{
    (void)state;
    round_trip("constant", 0, "constant");
    round_trip("cosine", 0, "cosine");
    round_trip("step:30,60:0.1", 0, "step:30,60:0.1");
    round_trip("step:30", 0, "step:30:0.1");
    round_trip("step:1,2:0.50", 0, "step:1,2:0.5");
    round_trip("step:7:0.33333333333333331", 0, "step:7:0.3333333333333333");
    round_trip("step:7:1e-5", 0, "step:7:1e-05");
    round_trip("step:0,4294967295:1e300", 0, "step:0,4294967295:1e+300");
    round_trip("cosine", 500, "cosine;warmup=500");
    round_trip("step:3:0.5;warmup=12", 0, "step:3:0.5;warmup=12");
    round_trip("constant;warmup=18446744073709", 0, "constant;warmup=18446744073709");
}

static void test_describe_truncates(void **state)
{
    (void)state;
    ps_sched_t s = parse_ok("step:30,60:0.1", 0);
    char txt[8];
    memset(txt, 'x', sizeof txt);
    ps_sched_describe(&s, txt, sizeof txt);
    assert_string_equal(txt, "step:30");
    ps_sched_describe(&s, txt, 0); /* cap 0 writes nothing */
    assert_string_equal(txt, "step:30");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_kinds),         cmocka_unit_test(test_parse_sixteen_milestones),
        cmocka_unit_test(test_parse_warmup),        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_lr_constant),         cmocka_unit_test(test_lr_step),
        cmocka_unit_test(test_lr_cosine),           cmocka_unit_test(test_lr_warmup),
        cmocka_unit_test(test_lr_warmup_step),      cmocka_unit_test(test_lr_warmup_cosine),
        cmocka_unit_test(test_describe_round_trip), cmocka_unit_test(test_describe_truncates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
