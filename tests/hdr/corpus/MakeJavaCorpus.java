/*
 * Writes the java_*.hlog files of this folder, and java_answers.json, with
 * HdrHistogram (Java) itself: its Histogram classes, its V2 encoder, its
 * HistogramLogWriter; then reads each log back with its HistogramLogReader
 * and records what Java answers for every interval (and for the whole log
 * and time ranges of it, as HdrHistogram's own HistogramLogReaderWriterTest
 * does for its jHiccup logs), so the tests can pin Java's own numbers.
 *
 * Used: the HdrHistogram jar that Debian packages (libhdrhistogram-java,
 * 2.1.11). From this folder:
 *
 *     javac -cp /usr/share/java/hdrhistogram.jar -d /tmp/mjc MakeJavaCorpus.java
 *     java -cp /usr/share/java/hdrhistogram.jar:/tmp/mjc MakeJavaCorpus .
 *
 * Deterministic (fixed seeds, fixed times): running it again rewrites the
 * same files. No value here comes from loopwatch or from the hdrhistogram
 * package.
 */

import java.io.File;
import java.io.FileOutputStream;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Random;

import org.HdrHistogram.AbstractHistogram;
import org.HdrHistogram.DoubleHistogram;
import org.HdrHistogram.EncodableHistogram;
import org.HdrHistogram.Histogram;
import org.HdrHistogram.HistogramIterationValue;
import org.HdrHistogram.HistogramLogReader;
import org.HdrHistogram.HistogramLogWriter;
import org.HdrHistogram.IntCountsHistogram;
import org.HdrHistogram.ShortCountsHistogram;

public class MakeJavaCorpus {
    static final long START_MSEC = 1_700_000_000_123L;  // a fixed epoch time
    static final double[] PERCENTILES = {0, 1, 10, 25, 50, 75, 90, 99, 99.9, 99.99, 100};

    /** Records, ignoring the values Java refuses (past the counts array). */
    static void record(AbstractHistogram h, long value, long count) {
        try {
            h.recordValueWithCount(value, count);
        } catch (ArrayIndexOutOfBoundsException e) {
            // the reference refuses it; so do we
        }
    }

    /** A jHiccup-like interval: nanosecond hiccups over a ~1 ms expected interval. */
    static Histogram hiccups(Random rng, int i) {
        Histogram h = new Histogram(20000, 3600L * 1000 * 1000 * 1000, 2);
        int n = 800 + rng.nextInt(400);
        for (int k = 0; k < n; k++) {
            long ns = (long) (20000 + StrictMath.exp(11 + 0.7 * rng.nextGaussian()));
            h.recordValueWithExpectedInterval(ns, 1_000_000L);
        }
        if (i % 9 == 4) {  // a pause now and then (a GC, as jHiccup sees)
            long pause = 5_000_000L + (long) (rng.nextDouble() * 1_800_000_000L);
            h.recordValueWithExpectedInterval(pause, 1_000_000L);
        }
        return h;
    }

    static void writeHiccupLog(File dir) throws Exception {
        Random rng = new Random(20150909);
        try (PrintStream out = new PrintStream(new FileOutputStream(new File(dir, "java_hiccup_ns.hlog")), false, "UTF-8")) {
            HistogramLogWriter log = new HistogramLogWriter(out);
            log.outputComment("[Logged with MakeJavaCorpus.java: HdrHistogram (Java) 2.1.11, as jHiccup writes its logs]");
            log.outputLogFormatVersion();
            log.outputStartTime(START_MSEC);
            log.outputLegend();
            double t = 0.127;  // relative to StartTime, no BaseTime: jHiccup's form
            for (int i = 0; i < 40; i++) {
                Histogram h = hiccups(rng, i);
                double length = 1.0 + (rng.nextInt(9) - 4) / 1000.0;
                log.outputIntervalHistogram(t, t + length, h, 1_000_000.0);
                t += length;
            }
        }
    }

    static Histogram latencyUs(Random rng, AbstractHistogram h, int n, double scale) {
        Histogram copy = new Histogram(1, 3_600_000_000L, 3);
        for (int k = 0; k < n; k++) {
            long v = (long) (scale * StrictMath.pow(1.0 - rng.nextDouble(), -1.0 / 1.2));
            record(h, v, 1 + (k % 7 == 0 ? rng.nextInt(5) : 0));
            record(copy, v, 1);
        }
        return copy;
    }

    static void writeTaggedLog(File dir) throws Exception {
        Random rng = new Random(1700000000);
        List<AbstractHistogram> lines = new ArrayList<>();
        List<String> tags = new ArrayList<>();

        Histogram plain = new Histogram(1, 3_600_000_000L, 3);
        latencyUs(rng, plain, 3000, 100);
        lines.add(plain); tags.add(null);

        IntCountsHistogram api = new IntCountsHistogram(1, 3_600_000_000L, 3);
        latencyUs(rng, api, 2000, 250);
        lines.add(api); tags.add("api");

        ShortCountsHistogram db = new ShortCountsHistogram(1, 100_000L, 2);
        for (int k = 0; k < 500; k++) record(db, 1 + rng.nextInt(100_000), 1 + rng.nextInt(3));
        lines.add(db); tags.add("db");

        Histogram auto = new Histogram(3);  // auto-resizing, as Java's Histogram(3) is
        for (int k = 0; k < 400; k++) record(auto, (long) StrictMath.pow(10, 1 + rng.nextDouble() * 9), 1);
        lines.add(auto); tags.add("auto");

        Histogram wide = new Histogram(1, Long.MAX_VALUE, 2);
        for (int k = 0; k < 300; k++) record(wide, (long) StrictMath.pow(2, rng.nextDouble() * 62), 1 + rng.nextInt(2));
        lines.add(wide); tags.add("wide");

        Histogram ns = new Histogram(1000, 60_000_000_000L, 4);
        for (int k = 0; k < 1500; k++) record(ns, 1000 + (long) StrictMath.exp(13 + 1.5 * rng.nextGaussian()), 1);
        lines.add(ns); tags.add("ns");

        Histogram fine = new Histogram(1, 100_000L, 5);
        for (int k = 0; k < 1500; k++) record(fine, (long) (800 * StrictMath.exp(0.6 * rng.nextGaussian())), 1);
        lines.add(fine); tags.add("fine");

        Histogram big = new Histogram(1, 3_600_000_000L, 3);  // counts past 32 bits
        record(big, 1, 3_000_000_000L);
        record(big, 250, 1L << 40);
        record(big, 3_600_000_000L, 7);
        for (int k = 0; k < 100; k++) record(big, 1 + rng.nextInt(1_000_000), 1_000_000_007L);
        lines.add(big); tags.add("big");

        Histogram edge = new Histogram(1, 1000, 3);  // values past highestTrackable, inside the array
        for (int k = 0; k < 200; k++) record(edge, 900 + rng.nextInt(200), 1 + rng.nextInt(3));
        record(edge, 0, 5);  // a zero too
        lines.add(edge); tags.add("edge");

        Histogram raw = new Histogram(1, 3_600_000_000L, 3);
        for (int k = 0; k < 300; k++) record(raw, 1000 + rng.nextInt(5000), 1);
        record(raw, 95_000, 1);
        lines.add(raw.copyCorrectedForCoordinatedOmission(10_000)); tags.add("co");

        lines.add(new Histogram(1, 3_600_000_000L, 3)); tags.add("empty");

        Histogram last = new Histogram(1, 3_600_000_000L, 3);
        latencyUs(rng, last, 1000, 50);
        lines.add(last); tags.add(null);

        try (PrintStream out = new PrintStream(new FileOutputStream(new File(dir, "java_tagged_us.hlog")), false, "UTF-8")) {
            HistogramLogWriter log = new HistogramLogWriter(out);
            log.outputComment("[Logged with MakeJavaCorpus.java: HdrHistogram (Java) 2.1.11, microseconds, tags]");
            log.outputLogFormatVersion();
            log.outputStartTime(START_MSEC);
            log.setBaseTime(START_MSEC);
            log.outputBaseTime(START_MSEC);
            log.outputLegend();
            for (int i = 0; i < lines.size(); i++) {
                AbstractHistogram h = lines.get(i);
                h.setTag(tags.get(i));
                h.setStartTimeStamp(START_MSEC + 1000L * i);
                h.setEndTimeStamp(START_MSEC + 1000L * (i + 1) - (i % 3));
                log.outputIntervalHistogram(h);  // times relative to the base time, ratio 1,000,000
            }
        }
    }

    /** Documented as unsupported by loopwatch: a DoubleHistogram's encoding. */
    static void writeDoubleLog(File dir) throws Exception {
        File sub = new File(dir, "unsupported");
        sub.mkdirs();
        Random rng = new Random(2);
        try (PrintStream out = new PrintStream(new FileOutputStream(new File(sub, "java_double.hlog")), false, "UTF-8")) {
            HistogramLogWriter log = new HistogramLogWriter(out);
            log.outputComment("[Logged with MakeJavaCorpus.java: HdrHistogram (Java) 2.1.11, DoubleHistogram]");
            log.outputLogFormatVersion();
            log.outputStartTime(START_MSEC);
            log.outputLegend();
            for (int i = 0; i < 2; i++) {
                DoubleHistogram h = new DoubleHistogram(3);
                for (int k = 0; k < 200; k++) h.recordValue(0.001 + rng.nextDouble() * 12.5);
                log.outputIntervalHistogram(i, i + 1.0, h, 1.0);
            }
        }
    }

    // ---- Java's answers, as its reader reads the files back ----

    static String num(double d) {
        if (d == Math.rint(d) && Math.abs(d) < 1e15) return Long.toString((long) d) + ".0";
        return Double.toString(d);
    }

    static String stats(AbstractHistogram h) {
        StringBuilder s = new StringBuilder();
        s.append("\"config\": [").append(h.getLowestDiscernibleValue()).append(", ")
                .append(h.getHighestTrackableValue()).append(", ")
                .append(h.getNumberOfSignificantValueDigits()).append("], ");
        s.append("\"total\": ").append(h.getTotalCount()).append(", ");
        s.append("\"min\": ").append(h.getMinValue()).append(", ");
        s.append("\"max\": ").append(h.getMaxValue()).append(", ");
        s.append("\"mean\": ").append(num(h.getMean())).append(", ");
        s.append("\"stdev\": ").append(num(h.getStdDeviation())).append(", ");
        s.append("\"percentiles\": [");
        for (int i = 0; i < PERCENTILES.length; i++) {
            if (i > 0) s.append(", ");
            s.append("[").append(num(PERCENTILES[i])).append(", ")
                    .append(h.getValueAtPercentile(PERCENTILES[i])).append("]");
        }
        s.append("], \"recorded\": [");
        boolean first = true;
        for (HistogramIterationValue v : h.recordedValues()) {
            if (!first) s.append(", ");
            first = false;
            s.append("[").append(v.getValueIteratedTo()).append(", ")
                    .append(v.getCountAtValueIteratedTo()).append("]");
        }
        s.append("]");
        return s.toString();
    }

    static String readBack(File file, double rangeStart, double rangeEnd, boolean perLine) throws Exception {
        HistogramLogReader reader = new HistogramLogReader(file);
        Histogram acc = new Histogram(3);
        StringBuilder lines = new StringBuilder();
        int count = 0;
        long total = 0;
        EncodableHistogram e;
        while ((e = reader.nextIntervalHistogram(rangeStart, rangeEnd)) != null) {
            Histogram h = (Histogram) e;
            count++;
            total += h.getTotalCount();
            acc.add(h);
            if (perLine) {
                if (lines.length() > 0) lines.append(",\n");
                lines.append("    {\"tag\": ").append(h.getTag() == null ? "null" : "\"" + h.getTag() + "\"")
                        .append(", \"start_ms\": ").append(h.getStartTimeStamp())
                        .append(", \"end_ms\": ").append(h.getEndTimeStamp())
                        .append(", ").append(stats(h)).append("}");
            }
        }
        StringBuilder s = new StringBuilder();
        s.append("{\"range\": [").append(num(rangeStart)).append(", ")
                .append(rangeEnd == Double.MAX_VALUE ? "null" : num(rangeEnd)).append("]")
                .append(", \"histogram_count\": ").append(count)
                .append(", \"total_count\": ").append(total)
                .append(", \"accumulated_p99_9\": ").append(acc.getValueAtPercentile(99.9))
                .append(", \"accumulated_p50\": ").append(acc.getValueAtPercentile(50))
                .append(", \"accumulated_max\": ").append(acc.getMaxValue())
                .append(", \"start_time_sec\": ").append(num(reader.getStartTimeSec()));
        if (perLine) s.append(",\n   \"intervals\": [\n").append(lines).append("]");
        s.append("}");
        reader.close();
        return s.toString();
    }

    public static void main(String[] args) throws Exception {
        Locale.setDefault(Locale.US);
        File dir = new File(args.length > 0 ? args[0] : ".");
        writeHiccupLog(dir);
        writeTaggedLog(dir);
        writeDoubleLog(dir);
        try (PrintWriter out = new PrintWriter(new File(dir, "java_answers.json"), "UTF-8")) {
            out.println("{\"_\": \"HdrHistogram (Java) 2.1.11's answers for the java_*.hlog files, read back"
                    + " with its HistogramLogReader; written by MakeJavaCorpus.java\",");
            File hiccup = new File(dir, "java_hiccup_ns.hlog");
            out.println(" \"java_hiccup_ns.hlog\": [");
            out.println("  " + readBack(hiccup, 0.0, Double.MAX_VALUE, true) + ",");
            out.println("  " + readBack(hiccup, 5, 20, false) + ",");
            out.println("  " + readBack(hiccup, 20, 35, false) + "],");
            File tagged = new File(dir, "java_tagged_us.hlog");
            out.println(" \"java_tagged_us.hlog\": [");
            out.println("  " + readBack(tagged, 0.0, Double.MAX_VALUE, true) + ",");
            out.println("  " + readBack(tagged, 3, 8, false) + "]}");
        }
    }
}
