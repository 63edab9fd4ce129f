/* int8_budget's greedy selection (graph/int8_budget.c) on hand-made costs: order by error removed
 * per extra byte, ties by name, the first upgrade that does not fit ends it, budget edges. */
#include "test.h"

#include "graph/int8_budget.h"

/* A removes 10 per byte, C 5, B 3, D 2. */
static const i8b_option OPTS[] = {
    {"A", 100, 10},
    {"B", 90, 30},
    {"C", 50, 10},
    {"D", 40, 20},
};
#define N_OPTS ((int)(sizeof OPTS / sizeof OPTS[0]))

TEST(best_error_per_byte_first)
{
    bool take[N_OPTS];
    int64_t spent;
    CHECK_EQ(i8b_select(OPTS, N_OPTS, 25, take, &spent), 2);
    CHECK(take[0] && !take[1] && take[2] && !take[3]);
    CHECK_EQ(spent, 20);
}

TEST(an_upgrade_that_exactly_fills_the_budget_is_taken)
{
    bool take[N_OPTS];
    int64_t spent;
    CHECK_EQ(i8b_select(OPTS, N_OPTS, 50, take, &spent), 3);
    CHECK(take[0] && take[1] && take[2] && !take[3]);
    CHECK_EQ(spent, 50);
    /* 49: B (30 more) does not fit after A and C, D (20) does */
    CHECK_EQ(i8b_select(OPTS, N_OPTS, 49, take, &spent), 3);
    CHECK(take[0] && !take[1] && take[2] && take[3]);
    CHECK_EQ(spent, 40);
}

TEST(an_upgrade_that_does_not_fit_is_skipped_and_cheaper_ones_still_fill)
{
    /* after A and C (20 bytes), B needs 30 more: 50 > 45 skips it, and D (20) still fits */
    bool take[N_OPTS];
    int64_t spent;
    CHECK_EQ(i8b_select(OPTS, N_OPTS, 45, take, &spent), 3);
    CHECK(take[0] && !take[1] && take[2] && take[3]);
    CHECK_EQ(spent, 40);
}

TEST(budget_edges_zero_and_everything)
{
    bool take[N_OPTS];
    int64_t spent = -1;
    CHECK_EQ(i8b_select(OPTS, N_OPTS, 0, take, &spent), 0);
    CHECK_EQ(spent, 0);
    for (int i = 0; i < N_OPTS; i++)
        CHECK(!take[i]);
    CHECK_EQ(i8b_select(OPTS, N_OPTS, 70, take, &spent), 4); /* the sum of the extras */
    CHECK_EQ(spent, 70);
    CHECK_EQ(i8b_select(OPTS, N_OPTS, INT64_MAX, take, &spent), 4);
    CHECK_EQ(i8b_select(OPTS, N_OPTS, 9, take, &spent), 0); /* below the cheapest: nothing fits */
    CHECK_EQ(i8b_select(OPTS, 0, 100, take, &spent), 0);
}

TEST(equal_gain_per_byte_goes_by_name)
{
    /* 1/3 and 2/6 are the same ratio: compared without division, the name decides */
    const i8b_option tie[] = {{"layers.1", 2, 6}, {"layers.0", 1, 3}, {"lm_head", 2, 6}};
    bool take[3];
    int64_t spent;
    CHECK_EQ(i8b_select(tie, 3, 6, take, &spent), 1);
    CHECK(!take[0] && take[1] && !take[2]);
    CHECK_EQ(i8b_select(tie, 3, 9, take, &spent), 2);
    CHECK(take[0] && take[1] && !take[2]);
    CHECK_EQ(spent, 9);
}

TEST(an_upgrade_that_removes_no_error_is_never_bought)
{
    const i8b_option o[] = {{"zero", 0, 1}, {"useful", 5, 10}};
    bool take[2];
    int64_t spent;
    CHECK_EQ(i8b_select(o, 2, 1000, take, &spent), 1);
    CHECK(!take[0] && take[1]);
    CHECK_EQ(spent, 10);
}
