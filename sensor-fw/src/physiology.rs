//! The simulated patient's physiology (the `sim` feature, for `sensor-sim` and tests): normal
//! values moving on a slow 30-minute wave with noise, and abnormal episodes that are clinically
//! unambiguous all along the wave.
//!
//! | vital (LOINC) | normal | fever | tachycardia | desaturation |
//! |---|---|---|---|---|
//! | temperature °C (8310-5) | 36.6–37.0 | **39.6–40.0** | normal | normal |
//! | heart rate /min (8867-4) | 64–80 | normal | **140–150** | normal |
//! | SpO2 % (2708-6) | 96–99 | normal | normal | **86–89** |
//! | respiratory rate /min (9279-1) | 12–18 | normal | normal | normal |
//!
//! Each episode's range clears its thresholds with margin at every point of the wave: a fever
//! scores 2 in NEWS2 (≥ 39.1 °C) and trips the gateway's default limit (39.1 °C) by at least
//! 0.5 °C; tachycardia and desaturation score 3 (≥ 131 /min, ≤ 91 %) and trip the gateway's
//! limits (131 /min, 91 %) by at least 9 /min and 2 %. The normal ranges score 0.

extern crate std;

use provenance_core::reading::{Decimal, Measurement, ReadingError};
use rand::Rng;

/// An abnormal episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Episode {
    /// Temperature 39.6–40.0 °C.
    Fever,
    /// Heart rate 140–150 /min.
    Tachycardia,
    /// SpO2 86–89 %.
    Desaturation,
}

impl Episode {
    /// From its name (`fever`, `tachycardia`, `desaturation`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "fever" => Some(Episode::Fever),
            "tachycardia" => Some(Episode::Tachycardia),
            "desaturation" => Some(Episode::Desaturation),
            _ => None,
        }
    }
}

/// One patient's physiology.
#[derive(Debug, Clone, Copy, Default)]
pub struct Physiology {
    /// The episode, if the patient has one.
    pub episode: Option<Episode>,
}

/// `center ± amplitude` on the wave, plus noise of at most `noise`.
fn value(center: f64, amplitude: f64, wave: f64, noise: f64, rng: &mut impl Rng) -> f64 {
    center + amplitude * wave + rng.gen_range(-noise..=noise)
}

impl Physiology {
    /// The four measurements at `t` (Unix ms): temperature (0.1 °C), heart rate, SpO2 and
    /// respiratory rate (integers).
    pub fn sample(&self, t: u64, rng: &mut impl Rng) -> Result<[Measurement; 4], ReadingError> {
        let wave = ((t as f64 / 60_000.0) * core::f64::consts::TAU / 30.0).sin();
        let temp = match self.episode {
            Some(Episode::Fever) => value(39.8, 0.1, wave, 0.05, rng),
            _ => value(36.8, 0.1, wave, 0.05, rng),
        };
        let hr = match self.episode {
            Some(Episode::Tachycardia) => value(145.0, 4.0, wave, 1.0, rng),
            _ => value(72.0, 6.0, wave, 2.0, rng),
        };
        let spo2 = match self.episode {
            Some(Episode::Desaturation) => value(87.5, 1.0, wave, 0.4, rng),
            _ => value(97.5, 0.8, wave, 0.4, rng),
        }
        .min(100.0);
        let rr = value(15.0, 2.0, wave, 1.0, rng);
        let m = |loinc, v: f64, scale: i8| {
            let mantissa = (v * 10f64.powi(-i32::from(scale))).round() as i64;
            Measurement::new(loinc, Decimal::new(mantissa, scale))
        };
        Ok([
            m("8310-5", temp, -1)?,
            m("8867-4", hr, 0)?,
            m("2708-6", spo2, 0)?,
            m("9279-1", rr, 0)?,
        ])
    }
}

/// A home's living room (private mode, issue #17): the room temperature (LOINC 60832-3, 0.1 °C)
/// on a day/night curve (17.5 °C at 03:00 UTC, 20.5 °C at 15:00), a heating cycle from 06:00 to
/// 22:00 (the thermostat's ±0.4 °C sawtooth, 40 minutes a cycle), and a window opened for ten
/// minutes at the start of every third hour (01:00, 04:00, …: down to 3 °C colder, then back).
#[derive(Debug, Clone, Copy, Default)]
pub struct Home;

impl Home {
    /// The room temperature at `t` (Unix ms), without noise.
    pub fn curve(t: u64) -> f64 {
        let hours = t as f64 / 3_600_000.0;
        let h = hours % 24.0;
        let base = 19.0 + 1.5 * ((h - 9.0) * core::f64::consts::TAU / 24.0).sin();
        let heating = if (6.0..22.0).contains(&h) {
            let phase = (t % 2_400_000) as f64 / 2_400_000.0;
            0.4 * (1.0 - 4.0 * (phase - 0.5).abs())
        } else {
            0.0
        };
        let minute = (t % 3_600_000) as f64 / 60_000.0;
        let window = if (h as u64) % 3 == 1 && minute < 10.0 {
            -3.0 * (1.0 - minute / 10.0)
        } else {
            0.0
        };
        base + heating + window
    }

    /// The room temperature at `t`, with ±0.05 °C of noise.
    pub fn sample(&self, t: u64, rng: &mut impl Rng) -> Result<[Measurement; 1], ReadingError> {
        let v = Self::curve(t) + rng.gen_range(-0.05..=0.05);
        Ok([Measurement::new(
            "60832-3",
            Decimal::new((v * 10.0).round() as i64, -1),
        )?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// The home's curve: colder at night than by day, a window opening makes it colder still,
    /// and every value stays in 14–21 °C.
    #[test]
    fn the_home_curve_has_its_day_its_night_and_its_windows() {
        let day0 = 1_767_225_600_000u64; // 2026-01-01T00:00Z
        let at = |h: f64| Home::curve(day0 + (h * 3_600_000.0) as u64);
        assert!(at(3.5) < at(15.5) - 2.0);
        assert!(
            at(4.0 + 1.0 / 60.0) < at(4.5) - 2.0,
            "a window opened at 04:00"
        );
        for m in 0..(24 * 60) {
            let v = Home::curve(day0 + m * 60_000);
            assert!((14.0..=21.0).contains(&v), "{v} at minute {m}");
        }
    }

    /// Every value of a whole wave (one sample a second for 30 minutes, several seeds) stays in
    /// the documented range.
    #[test]
    fn every_sample_of_the_wave_is_in_its_documented_range() {
        let ranges = [
            (
                None,
                [(36.6, 37.0), (64.0, 80.0), (96.0, 99.0), (12.0, 18.0)],
            ),
            (
                Some(Episode::Fever),
                [(39.6, 40.0), (64.0, 80.0), (96.0, 99.0), (12.0, 18.0)],
            ),
            (
                Some(Episode::Tachycardia),
                [(36.6, 37.0), (140.0, 150.0), (96.0, 99.0), (12.0, 18.0)],
            ),
            (
                Some(Episode::Desaturation),
                [(36.6, 37.0), (64.0, 80.0), (86.0, 89.0), (12.0, 18.0)],
            ),
        ];
        for (episode, want) in ranges {
            let body = Physiology { episode };
            for seed in 0..4 {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                for s in 0..1800u64 {
                    let t = 1_700_000_000_000 + seed * 7_919_000 + s * 1000;
                    let got = body.sample(t, &mut rng).expect("valid measurements");
                    for (m, (lo, hi)) in got.iter().zip(want) {
                        let v = m.value.to_f64();
                        assert!(
                            (lo..=hi).contains(&v),
                            "{episode:?} {}: {v} at {t}",
                            m.vital.loinc
                        );
                    }
                }
            }
        }
    }
}
