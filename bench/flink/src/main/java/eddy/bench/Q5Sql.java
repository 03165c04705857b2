package eddy.bench;

import java.time.LocalDateTime;
import java.time.ZoneOffset;

import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.table.api.Schema;
import org.apache.flink.table.api.Table;
import org.apache.flink.table.api.bridge.java.StreamTableEnvironment;
import org.apache.flink.types.Row;

import eddy.gen.Generators.Bid;

/**
 * q5 in Flink SQL: a HOP window aggregation followed by a window Top-1. The bids come from the
 * same DataStream source (and its watermarks, via SOURCE_WATERMARK()).
 */
final class Q5Sql {
    private Q5Sql() {}

    static DataStream<String> q5(StreamExecutionEnvironment env, DataStream<Bid> bids) {
        StreamTableEnvironment tEnv = StreamTableEnvironment.create(env);
        // Window bounds come out as TIMESTAMP(3) in the session time zone: make that UTC so they
        // convert back to epoch milliseconds.
        tEnv.getConfig().set("table.local-time-zone", "UTC");
        tEnv.createTemporaryView("bids", tEnv.fromDataStream(bids, Schema.newBuilder()
                .columnByMetadata("rowtime", "TIMESTAMP_LTZ(3)")
                .watermark("rowtime", "SOURCE_WATERMARK()")
                .build()));
        Table hottest = tEnv.sqlQuery(
                "SELECT window_start, window_end, auction, num FROM ("
                        + " SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end"
                        + "   ORDER BY num DESC, auction ASC) AS rn FROM ("
                        + "  SELECT window_start, window_end, auction, COUNT(*) AS num"
                        + "  FROM TABLE(HOP(TABLE bids, DESCRIPTOR(rowtime), INTERVAL '2' SECOND, INTERVAL '10' SECOND))"
                        + "  GROUP BY window_start, window_end, auction))"
                        + " WHERE rn = 1");
        return tEnv.toDataStream(hottest).map(Q5Sql::json, Types.STRING).name("q5-sql-json");
    }

    static String json(Row r) {
        return EddyBaseline.q5Json(millis(r.getFieldAs(0)), millis(r.getFieldAs(1)),
                r.<Long>getFieldAs(2), r.<Long>getFieldAs(3));
    }

    static long millis(LocalDateTime t) {
        return t.toInstant(ZoneOffset.UTC).toEpochMilli();
    }
}
