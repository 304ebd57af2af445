/*
 * report.h - the metrics report of htkv_metrics_write() (features layer, metrics.c).
 *
 * The report only reads counters and histograms; it never blocks writers. metrics.h holds the
 * counters themselves (base layer) and must not see the store, hence this header.
 */
#ifndef HTKV_ENGINE_REPORT_H
#define HTKV_ENGINE_REPORT_H

#include <stdio.h>

struct htkv_db;

/* Write the report of htkv_metrics_write() (call guard held, format checked). */
int htkv_metrics_emit(struct htkv_db *db, FILE *f, int format);

#endif /* HTKV_ENGINE_REPORT_H */
